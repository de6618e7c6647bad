//! The NAAM client library: calls, one-sided ops, local execution.
