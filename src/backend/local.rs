//! `oasis-local`: the built-in, deterministic, offline model. (Being written.)
