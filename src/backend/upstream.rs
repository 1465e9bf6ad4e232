//! The upstream backend: any OpenAI-compatible Chat Completions server. (Being written.)
