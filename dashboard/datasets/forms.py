"""The datasets page's forms: upload a file, paste rows, rename."""

from __future__ import annotations

from typing import Any

from django import forms

from .parsing import DatasetError
from .services import MAX_NAME, clean_name


class _NameMixin:
    def clean_name(self) -> str:
        try:
            return clean_name(self.cleaned_data.get("name") or "")  # type: ignore[attr-defined]
        except DatasetError as exc:
            raise forms.ValidationError(str(exc)) from None


class DatasetUploadForm(_NameMixin, forms.Form):
    name = forms.CharField(
        max_length=MAX_NAME,
        required=False,
        help_text="Empty: the file's name.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    file = forms.FileField(
        help_text="CSV with a header row (UTF-8), JSONL (one object a line) or XLSX (first "
        "sheet, header row).",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.tsv,.jsonl,.ndjson,.xlsx"}),
    )

    def clean_name(self) -> str:
        upload = self.files.get("file")
        if not (self.cleaned_data.get("name") or "").strip() and upload is not None:
            self.cleaned_data["name"] = upload.name.rsplit(".", 1)[0] or upload.name
        return super().clean_name()


class DatasetPasteForm(_NameMixin, forms.Form):
    name = forms.CharField(
        max_length=MAX_NAME, widget=forms.TextInput(attrs={"autocomplete": "off"})
    )
    text = forms.CharField(
        label="Rows",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "mono"}),
        help_text="A header row, then one row a line: comma-separated (quote fields with "
        "commas), or tab-separated as copied from a spreadsheet.",
    )

    def clean_text(self) -> str:
        text = self.cleaned_data["text"]
        if "\x00" in text:
            raise forms.ValidationError("The rows may not contain NUL characters.")
        return text


class DatasetRenameForm(_NameMixin, forms.Form):
    name = forms.CharField(max_length=MAX_NAME)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].widget.attrs["autocomplete"] = "off"
