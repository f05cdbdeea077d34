//! A mock OpenAI-compatible upstream (being written).
