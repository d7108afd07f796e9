"""Platform adapters: each parses a platform event into a bot call and renders the Reply back."""

__all__: list[str] = []
