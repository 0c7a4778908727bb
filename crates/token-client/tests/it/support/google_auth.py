"""Obtains an access token with Google's Python auth library (google-auth) from the credential
configuration in GOOGLE_APPLICATION_CREDENTIALS, as an unmodified application would:
google.auth.default() loads the file, the library runs the executable source (or reads the
file or URL source), exchanges the ID token at the configuration's STS URL (the emulator) and
impersonates when the configuration says so.

Prints {"token": ...}; on failure {"error": message} and exit code 1. Scopes are added after
loading (as client libraries do), so that default() does not look up the project ID at the
real Cloud Resource Manager.
"""

import json
import os
import sys

import google.auth
from google.auth.credentials import with_scopes_if_required
from google.auth.transport.requests import Request


def main() -> int:
    try:
        credentials, _ = google.auth.default()
        credentials = with_scopes_if_required(credentials, [os.environ["SCOPE"]])
        credentials.refresh(Request())
    except Exception as error:  # the test reads the library's message
        print(json.dumps({"error": str(error), "type": type(error).__name__}))
        return 1
    print(json.dumps({"token": credentials.token, "type": type(credentials).__module__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
