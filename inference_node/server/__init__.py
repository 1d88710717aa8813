"""The node's OpenAI-compatible HTTP server and its payment gate."""
