//! Unit tests of the doctor's rules.
