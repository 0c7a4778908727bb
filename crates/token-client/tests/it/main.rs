//! Integration tests of token-client against the real broker over mTLS.
