//! Helpers for the system tests: namespaces, veths, raw frames.
