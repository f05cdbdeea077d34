"""The official OpenAI Python SDK against gw serving the seed 001 policy.

Run by tests/sdk/run.sh, which builds gw, starts `gw mock` and `gw serve` on a copy of
examples/unified-proxy (its target pointed at the mock) and sets:

    GW_SDK_BASE_URL   e.g. http://127.0.0.1:PORT/proxy/miniai/v2 (the SDK appends /chat/completions)
    GW_SDK_USER_KEY   a user key of the policy (sk-user-1); the SDK sends it as a bearer token

What must hold: a client written for OpenAI works unchanged through the gateway: a chat
completion (content, usage), a streamed one (chunks iterate as they arrive, content assembled,
usage in the last chunk when asked for), and gateway errors surfacing as the SDK's typed
exceptions with OpenAI's error shape {"error": {"message", "type", "code"}}.

Standard library unittest only, so the one dependency is `openai`.
"""

import os
import sys
import time
import unittest
from urllib.parse import urlparse

try:
    import openai
except ImportError:  # run.sh installs it; say so plainly when run by hand
    sys.exit("test_openai_sdk: the openai package is missing (pip install openai)")

BASE_URL = os.environ.get("GW_SDK_BASE_URL", "http://127.0.0.1:8514/proxy/miniai/v2")
USER_KEY = os.environ.get("GW_SDK_USER_KEY", "sk-user-1")
MODEL = "gpt-3.5-turbo"
MESSAGES = [{"role": "user", "content": "Hello"}]


def client(api_key=USER_KEY):
    # No retries: a failure must show as the first answer, not be retried away.
    return openai.OpenAI(base_url=BASE_URL, api_key=api_key, max_retries=0, timeout=10.0)


def error_body(exc):
    """The parsed JSON body of an APIStatusError, and its "error" object."""
    body = exc.response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    return body, body["error"]


class ChatCompletions(unittest.TestCase):
    def test_non_streaming(self):
        resp = client().chat.completions.create(model=MODEL, messages=MESSAGES)
        self.assertEqual(resp.object, "chat.completion")
        self.assertEqual(resp.model, MODEL)
        self.assertTrue(resp.id)
        self.assertEqual(len(resp.choices), 1)
        choice = resp.choices[0]
        self.assertEqual(choice.message.role, "assistant")
        self.assertIsInstance(choice.message.content, str)
        self.assertTrue(choice.message.content.strip(), "empty content")
        self.assertEqual(choice.finish_reason, "stop")
        usage = resp.usage
        self.assertIsNotNone(usage)
        self.assertGreater(usage.prompt_tokens, 0)
        self.assertGreater(usage.completion_tokens, 0)
        self.assertEqual(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens)

    def test_multi_turn_with_raw_response(self):
        # Business fields pass through; the gateway adds its request id to the answer.
        raw = client().chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "What is Python?"},
                {"role": "assistant", "content": "Python is a programming language..."},
                {"role": "user", "content": "How to learn it?"},
            ],
            temperature=0.7,
            max_tokens=100,
        )
        self.assertEqual(raw.http_request.url.path, urlparse(BASE_URL).path.rstrip("/") + "/chat/completions")
        self.assertTrue(raw.headers.get("x-request-id"), "no x-request-id on the answer")
        resp = raw.parse()
        self.assertTrue(resp.choices[0].message.content)

    def test_streaming(self):
        chunk_delay_ms = 40
        stream = client().chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            # Ask the mock upstream to pause between chunks, so buffering would show.
            extra_headers={"x-mock-chunks": "6", "x-mock-chunk-delay-ms": str(chunk_delay_ms)},
        )
        parts, arrivals, usage, finish = [], [], None, None
        for chunk in stream:
            arrivals.append(time.monotonic())
            self.assertEqual(chunk.object, "chat.completion.chunk")
            self.assertEqual(chunk.model, MODEL)
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    parts.append(choice.delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
        content = "".join(parts)
        self.assertGreater(len(arrivals), 1, "the stream came as a single chunk")
        self.assertGreaterEqual(len(parts), 6, f"content chunks: {parts!r}")
        self.assertTrue(content.strip(), "assembled content is empty")
        self.assertEqual(finish, "stop")
        self.assertIsNotNone(usage, "no usage chunk despite include_usage")
        self.assertEqual(usage.completion_tokens, 6)
        self.assertEqual(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens)
        # The mock sleeps between chunks, so chunks forwarded as they arrive are spread over at
        # least (6 - 1) * 40 ms; a buffered stream would arrive all at once. A lower bound made of
        # the mock's own sleeps: never flaky on a slow machine.
        spread_ms = (arrivals[-1] - arrivals[0]) * 1000
        self.assertGreater(spread_ms, 2 * chunk_delay_ms, f"chunks arrived together ({spread_ms:.0f} ms apart)")


class Errors(unittest.TestCase):
    def test_wrong_key_is_authentication_error(self):
        with self.assertRaises(openai.AuthenticationError) as ctx:
            client(api_key="sk-wrong-key").chat.completions.create(model=MODEL, messages=MESSAGES)
        exc = ctx.exception
        self.assertEqual(exc.status_code, 401)
        body, err = error_body(exc)
        for field in ("message", "type", "code"):
            self.assertIn(field, err, body)
            self.assertIsInstance(err[field], str, body)
        self.assertTrue(err["message"])
        self.assertEqual(err["type"], "authentication_error")
        # The SDK surfaces the same fields.
        self.assertEqual(exc.code, err["code"])
        self.assertEqual(exc.type, err["type"])
        self.assertNotIn("sk-wrong-key", exc.response.text, "the key was echoed back")

    def test_wrong_key_stream_is_authentication_error(self):
        with self.assertRaises(openai.AuthenticationError):
            client(api_key="sk-wrong-key").chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)

    def test_missing_messages_is_bad_request(self):
        # The seed's guard: `deny 400 "Invalid request format" if not body.messages exists`.
        with self.assertRaises(openai.BadRequestError) as ctx:
            client().chat.completions.create(model=MODEL, messages=openai.NOT_GIVEN)
        self.assertEqual(ctx.exception.status_code, 400)
        _, err = error_body(ctx.exception)
        self.assertEqual(err["message"], "Invalid request format")

    def test_unknown_route_is_not_found(self):
        # Seed 001 exposes only chat completions: /models has no route.
        with self.assertRaises(openai.NotFoundError) as ctx:
            client().models.list()
        _, err = error_body(ctx.exception)
        self.assertEqual(err["type"], "not_found_error")


if __name__ == "__main__":
    print(f"openai {openai.__version__} against {BASE_URL}", file=sys.stderr)
    unittest.main(verbosity=2)
