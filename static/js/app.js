// The app's only script. No inline JS anywhere (the CSP forbids it), and htmx
// runs with allowEval and allowScriptTags off, so trigger filters cannot be
// used: visibility-aware polling and confirmations live here instead.
(function () {
  "use strict";

  // The menu on narrow screens: folded behind its button once this script runs
  // (the CSS folds it only under .js-nav, so without scripts every link shows).
  (function () {
    var header = document.querySelector(".topbar");
    var toggle = header && header.querySelector(".nav-toggle");
    var menu = document.getElementById("site-menu");
    if (!toggle || !menu) { return; }
    function setOpen(open) {
      header.classList.toggle("menu-open", open);
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    }
    header.classList.add("js-nav");
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      setOpen(toggle.getAttribute("aria-expanded") !== "true");
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && toggle.getAttribute("aria-expanded") === "true") {
        setOpen(false);
        toggle.focus();
      }
    });
  })();

  // Poll only while the tab is visible: skip the request, keep the schedule.
  document.addEventListener("htmx:confirm", function (event) {
    var elt = event.detail.elt;
    if (document.hidden && elt && elt.hasAttribute("data-poll")) {
      event.preventDefault();
    }
  });

  // Forms that ask before doing something destructive.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // The team switcher submits itself when changed.
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.hasAttribute && target.hasAttribute("data-autosubmit")) {
      target.form.submit();
    }
  });

  // Progress bars take their width from data-progress (no inline styles under the CSP).
  function paintProgress(root) {
    (root || document).querySelectorAll("[data-progress]").forEach(function (bar) {
      bar.style.width = Math.max(0, Math.min(100, parseFloat(bar.getAttribute("data-progress")) || 0)) + "%";
    });
  }

  // Times: the server writes them in its own zone, named ("14:03:07 UTC"); here
  // they are shown in the reader's zone, named too ("16:03:07 CEST"). The ISO
  // datetime attribute stays as it is.
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function zoneName(date) {
    try {
      var parts = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(date);
      for (var i = 0; i < parts.length; i++) {
        if (parts[i].type === "timeZoneName") { return parts[i].value; }
      }
    } catch (e) { /* an old browser: the zone stays unnamed rather than wrong */ }
    return "";
  }
  function localTimes(root) {
    (root || document).querySelectorAll("time[data-local]").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (isNaN(at.getTime())) { return; }
      var day = at.getFullYear() + "-" + pad(at.getMonth() + 1) + "-" + pad(at.getDate());
      var minute = pad(at.getHours()) + ":" + pad(at.getMinutes());
      var second = minute + ":" + pad(at.getSeconds());
      var form = el.getAttribute("data-local");
      var text = form === "time" ? second : form === "minute" ? day + " " + minute : day + " " + second;
      var zone = zoneName(at);
      el.textContent = zone ? text + " " + zone : text;
    });
  }

  function enhance(root) {
    paintProgress(root);
    localTimes(root);
    (root || document).querySelectorAll("[data-copy][hidden]").forEach(function (button) {
      button.hidden = false;
    });
  }
  document.addEventListener("DOMContentLoaded", function () { enhance(document); countPrompts(); });
  document.addEventListener("htmx:afterSettle", function () { enhance(document); });
  document.addEventListener("htmx:oobAfterSwap", function () { enhance(document); });

  // Copy buttons (a new API token): the clipboard API, else select and copy.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) { return; }
    var field = document.getElementById(button.getAttribute("data-copy"));
    var status = button.parentNode.querySelector(".copy-status");
    if (!field) { return; }
    function done(ok) {
      if (status) { status.textContent = ok ? "Copied." : "Select the text and copy it."; }
    }
    function fallback() {
      field.focus();
      field.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      done(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(function () { done(true); }, fallback);
    } else {
      fallback();
    }
  });

  // The new-job form: how many prompts the text makes, as the user types. The
  // same rules as dashboard/jobs/forms.py split_prompts (a test checks both).
  function splitPrompts(text, mode) {
    text = text.replace(/\r\n/g, "\n");
    function nonEmpty(parts) {
      return parts.map(function (p) { return p.trim(); }).filter(function (p) { return p; });
    }
    if (mode === "lines") { return nonEmpty(text.split("\n")); }
    if (mode === "separator") { return nonEmpty(text.split("\n---\n")); }
    return text.trim() ? [text.trim()] : [];
  }
  window.dashboardSplitPrompts = splitPrompts;
  function countPrompts() {
    var out = document.getElementById("prompt-count");
    var text = document.getElementById("id_prompts");
    var split = document.getElementById("id_split");
    if (!out || !text || !split) { return; }
    var n = splitPrompts(text.value, split.value).length;
    out.textContent = n.toLocaleString("en") + (n === 1 ? " prompt" : " prompts");
  }
  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target.id === "id_prompts") { countPrompts(); }
    // The user chose a model: a credential picked later keeps it.
    if (target.id === "id_model" && event.isTrusted) { modelChosen(); }
  });
  document.addEventListener("change", function (event) {
    if (event.target.id === "id_split") { countPrompts(); }
  });
  function modelChosen() {
    var auto = document.getElementById("model-auto");
    if (auto) { auto.value = "0"; }
  }
  // A model from the list beside the field fills it (and refreshes the warning).
  document.addEventListener("click", function (event) {
    var pick = event.target.closest && event.target.closest("[data-model-pick]");
    var input = document.getElementById("id_model");
    if (!pick || !input) { return; }
    input.value = pick.getAttribute("data-model-pick");
    modelChosen();
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.focus();
  });

  // Countdowns to an instance's expiry tick every second between polls.
  // The same words the server renders (dashboard.instances.duration_text).
  function formatSeconds(total) {
    if (total <= 0) { return "now (Bytez stops it within 2 min)"; }
    if (total < 60) { return "in " + total + " s"; }
    if (total < 3600) {
      var rest = total % 60;
      return "in " + Math.floor(total / 60) + " min" + (rest ? " " + rest + " s" : "");
    }
    var minutes = Math.floor((total % 3600) / 60);
    return "in " + Math.floor(total / 3600) + " h" + (minutes ? " " + minutes + " min" : "");
  }
  window.setInterval(function () {
    document.querySelectorAll("time[data-expires-at]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime") || el.getAttribute("data-expires-at"));
      if (!isNaN(at)) {
        el.textContent = formatSeconds(Math.round((at - Date.now()) / 1000));
      }
    });
  }, 1000);

  // Keep a live log scrolled to the end while the reader is at the end.
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var log = event.detail.target;
    if (log && log.classList && log.classList.contains("log")) {
      log.dataset.stick = (log.scrollTop + log.clientHeight >= log.scrollHeight - 8) ? "1" : "";
    }
  });
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var log = event.detail.target;
    if (log && log.classList && log.classList.contains("log") && log.dataset.stick === "1") {
      log.scrollTop = log.scrollHeight;
    }
  });

  // The team and user menus (<details>): one open at a time, closed by Escape or a click elsewhere.
  document.addEventListener("click", function (event) {
    document.querySelectorAll("[data-menu-group][open]").forEach(function (group) {
      if (!group.contains(event.target)) { group.removeAttribute("open"); }
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") { return; }
    document.querySelectorAll("[data-menu-group][open]").forEach(function (group) {
      group.removeAttribute("open");
      if (group.contains(document.activeElement)) { group.querySelector("summary").focus(); }
    });
  });

  // Reviewing rows (a job's results, a comparison's cells): j/k or the arrows on a row move
  // between them (h/l across a comparison's targets), Enter or a click opens one in its detail
  // panel (htmx), 2/1 rate it up/down (3: best), Esc closes it; a live region says what opened.
  // The address follows the open panel (?row=N), so reloading or sharing it reopens it.
  (function () {
    var currentId = null;
    function list() { return document.querySelector("[data-review-list]"); }
    function items() {
      var root = list();
      return root ? Array.prototype.slice.call(root.querySelectorAll("[data-review-item]")) : [];
    }
    function panel() { return document.querySelector("[data-review-panel]"); }
    function slot() { return document.querySelector("[data-review-slot]"); }
    function announce(text) {
      var region = document.querySelector("[data-review-announce]");
      if (!region) { return; }
      region.textContent = "";
      window.setTimeout(function () { region.textContent = text; }, 30);
    }
    function setCurrent(el, focus) {
      items().forEach(function (it) { it.classList.toggle("current", it === el); });
      currentId = el ? el.id : null;
      if (el && focus) {
        el.focus({ preventScroll: true });
        el.scrollIntoView({ block: "nearest" });
      }
    }
    function open(el) {
      var link = el && el.querySelector("[data-review-open]");
      if (!link) { return; }
      setCurrent(el, false);
      link.click();
    }
    function setAddress(params, remove) {
      var url = new URL(window.location.href);
      (remove || "").split(" ").forEach(function (key) { if (key) { url.searchParams.delete(key); } });
      new URLSearchParams(params || "").forEach(function (value, key) { url.searchParams.set(key, value); });
      window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
    }
    function paramKeys(p) {
      return Array.from(new URLSearchParams(p.getAttribute("data-review-params") || "").keys()).join(" ");
    }
    function close() {
      var p = panel();
      if (!p) { return false; }
      var keys = paramKeys(p);
      var title = p.querySelector("h2");
      var where = document.getElementById(p.getAttribute("data-review-for") || "") ||
        document.getElementById(currentId || "");
      p.remove();
      setAddress("", keys);
      announce((title ? title.textContent.replace(/\s+/g, " ").trim() : "Detail") + " closed");
      if (where) { setCurrent(where, true); }
      return true;
    }
    function move(step, across) {
      var all = items();
      if (!all.length) { return; }
      var here = document.getElementById(currentId || "");
      var at = all.indexOf(here);
      var next;
      if (at < 0) {
        next = all[step > 0 ? 0 : all.length - 1];
      } else if (across || !here.hasAttribute("data-col")) {
        next = all[Math.max(0, Math.min(all.length - 1, at + step))];
      } else {
        var col = here.getAttribute("data-col");
        var same = all.filter(function (it) { return it.getAttribute("data-col") === col; });
        next = same[Math.max(0, Math.min(same.length - 1, same.indexOf(here) + step))];
      }
      setCurrent(next, true);
      if (panel() && next !== here) { open(next); }
    }
    function rate(which, tries) {
      var p = panel();
      if (!p) { return; }
      // A panel just swapped in is wired by htmx when it settles: until then wait, so the
      // rating goes by htmx and not as a full form post.
      if (!p.hasAttribute("data-settled") && (tries || 0) < 20) {
        window.setTimeout(function () { rate(which, (tries || 0) + 1); }, 50);
        return;
      }
      var button = p.querySelector(which);
      if (button) { button.click(); }
    }
    function typing(target) {
      return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
    }
    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey || !list()) { return; }
      if (event.key === "Escape") {
        if (close()) { event.preventDefault(); }
        return;
      }
      if (typing(event.target)) { return; }
      var onItem = event.target.hasAttribute && event.target.hasAttribute("data-review-item");
      var key = event.key;
      if (key === "j" || (key === "ArrowDown" && onItem)) { move(1); }
      else if (key === "k" || (key === "ArrowUp" && onItem)) { move(-1); }
      else if (key === "l" || (key === "ArrowRight" && onItem)) { move(1, true); }
      else if (key === "h" || (key === "ArrowLeft" && onItem)) { move(-1, true); }
      else if (key === "Enter" && onItem) { open(event.target); }
      else if (key === "2" && panel()) { rate("button[title='Thumbs up']"); }
      else if (key === "1" && panel()) { rate("button[title='Thumbs down']"); }
      else if (key === "3" && panel()) { rate("button.vote-best"); }
      else { return; }
      event.preventDefault();
    });
    document.addEventListener("click", function (event) {
      var target = event.target;
      if (!target.closest) { return; }
      var closer = target.closest("[data-review-close]");
      if (closer) {
        event.preventDefault();
        close();
        return;
      }
      var item = target.closest("[data-review-item]");
      if (!item || !list() || !list().contains(item)) { return; }
      if (target.closest("[data-review-open]")) { setCurrent(item, false); return; }
      if (target.closest("a, button, input, select, textarea, label, summary, form")) { return; }
      if (window.getSelection && String(window.getSelection())) { return; }  // selecting text
      open(item);
    });
    function opened(p) {
      var item = document.getElementById(p.getAttribute("data-review-for") || "");
      if (item) { setCurrent(item, false); item.scrollIntoView({ block: "nearest" }); }
      setAddress(p.getAttribute("data-review-params"), "");
      var drawer = window.getComputedStyle(p).position === "fixed";
      p.focus({ preventScroll: true });
      if (!drawer) { p.scrollIntoView({ block: "start" }); }  // a phone: the card under the table
    }
    document.addEventListener("htmx:afterSwap", function (event) {
      var target = event.detail.target;
      if (target && target.hasAttribute && target.hasAttribute("data-review-slot")) {
        var p = panel();
        if (p) {
          opened(p);
          announce(p.getAttribute("data-announce") || "");
        }
      } else if (panel() && event.detail.requestConfig && event.detail.requestConfig.verb === "post") {
        // A rating swapped in the panel: keep the focus there, say what it is now.
        var pressed = panel().querySelector("form.rate [aria-pressed='true']");
        announce(pressed ? "Rated: " + pressed.getAttribute("title") : "Rating cleared");
        if (!panel().contains(document.activeElement)) { panel().focus({ preventScroll: true }); }
      }
    });
    document.addEventListener("htmx:afterSettle", function () {
      var p = panel();
      if (p) { p.setAttribute("data-settled", ""); }
    });
    document.addEventListener("htmx:oobAfterSwap", function () {
      var here = document.getElementById(currentId || "");
      if (here) { here.classList.add("current"); }
    });
    document.addEventListener("DOMContentLoaded", function () {
      var p = panel();
      if (p && slot()) {
        p.setAttribute("data-settled", "");  // htmx has processed the page by now
        opened(p);
      }
    });
  })();
})();
