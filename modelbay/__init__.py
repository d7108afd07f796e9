"""ModelBay: a chat-ops model marketplace."""

__version__ = "0.1.0"
