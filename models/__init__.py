"""Model specs (``*.toml``) and the example-data generators that go with them."""
