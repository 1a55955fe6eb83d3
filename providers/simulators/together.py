"""Together's legacy ``POST /inference``, as :mod:`providers.together` describes it."""

from __future__ import annotations

from .base import Request, Response, Simulator, bad_request, completion_text, json_body


class TogetherSimulator(Simulator):
    name = "together"

    def setup_routes(self) -> None:
        self.route("POST", "/inference", self.inference)

    def inference(self, request: Request) -> Response:
        body = json_body(request)
        model, prompt = body.get("model"), body.get("prompt")
        if not isinstance(model, str) or not model:
            raise bad_request("'model' is required")
        if not isinstance(prompt, str):
            raise bad_request("'prompt' must be a string")
        max_tokens = body.get("max_tokens")
        text = completion_text(model, prompt, max_tokens if isinstance(max_tokens, int) else None)
        args = {k: v for k, v in body.items()}
        return Response(
            200,
            {
                "status": "finished",
                "prompt": [prompt],
                "model": model,
                "model_owner": "",
                "tags": {},
                "num_returns": 1,
                "args": args,
                "subjobs": [],
                "output": {
                    "choices": [{"finish_reason": "length", "index": 0, "text": text}],
                    "raw_compute_time": 0.0395,
                    "result_type": "language-model-inference",
                },
            },
        )
