"""Verifies every webhook request a test recorded with the Standard Webhooks
reference library (PyPI `standardwebhooks`): its signature under the
endpoint's secret, and its timestamp within the library's tolerance.

Usage: verify.py SECRET RECORDED.jsonl; prints how many were verified.
A request that fails verification ends the run with an error."""

import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> None:
    secret, recorded = sys.argv[1], sys.argv[2]
    webhook = Webhook(secret)
    verified = 0
    with open(recorded, encoding="utf-8") as lines:
        for line in lines:
            request = json.loads(line)
            webhook.verify(
                request["body"],
                {
                    "webhook-id": request["id"],
                    "webhook-timestamp": request["timestamp"],
                    "webhook-signature": request["signature"],
                },
            )
            verified += 1
    print(verified)


if __name__ == "__main__":
    main()
