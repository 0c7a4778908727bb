// Obtains an access token with Google's Node auth library (google-auth-library) from the
// credential configuration in GOOGLE_APPLICATION_CREDENTIALS, as an unmodified application
// would: GoogleAuth finds the file, runs the executable source, exchanges the ID token at the
// configuration's STS URL (the emulator) and impersonates when the configuration says so.
// Prints {"token": ...}; on failure {"error": message} and exit code 1.
'use strict';

const {GoogleAuth} = require('google-auth-library');

async function main() {
  const auth = new GoogleAuth({scopes: [process.env.SCOPE]});
  const client = await auth.getClient();
  const {token} = await client.getAccessToken();
  return token;
}

main().then(
  token => console.log(JSON.stringify({token})),
  error => {
    console.log(JSON.stringify({error: String((error && error.message) || error)}));
    process.exit(1);
  }
);
