"""Obtains an access token with Google's own Python auth library (google-auth) from
executable-sourced external-account credentials (AIP-4117) whose command calls Token Service.

google-auth runs the command, parses our `format=external_credential` response with its own
parser, exchanges the ID token at the STS URL (the emulator) and, when asked, impersonates a
service account there. Prints {"token": ...} on success; exits non-zero with the library's error
otherwise.

Environment: COMMAND (absolute path of the executable), AUDIENCE (//iam.googleapis.com/...),
STS_URL, IMPERSONATION_URL (optional), SCOPE.
"""

import json
import os
import sys

from google.auth import pluggable
from google.auth.transport.requests import Request


def main() -> int:
    info = {
        "type": "external_account",
        "audience": os.environ["AUDIENCE"],
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "token_url": os.environ["STS_URL"],
        "credential_source": {
            "executable": {"command": os.environ["COMMAND"], "timeout_millis": 10000}
        },
    }
    if os.environ.get("IMPERSONATION_URL"):
        info["service_account_impersonation_url"] = os.environ["IMPERSONATION_URL"]
    credentials = pluggable.Credentials.from_info(info, scopes=[os.environ["SCOPE"]])
    credentials.refresh(Request())
    print(json.dumps({"token": credentials.token, "expiry": str(credentials.expiry)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
