"""The error hierarchy: one base, and a marker for errors whose message a client may see."""


class CDPError(Exception):
    """Base of every error the server raises on purpose."""


class UserError(CDPError):
    """The caller's input is wrong; the message says what and is safe to show to clients.

    Every other exception is an internal error: logged in full, masked for clients.
    """


class NotFoundError(UserError):
    """What the caller named does not exist."""


class Unauthorized(UserError):
    """The caller could not be authenticated (a missing or wrong key or signature)."""


class ConfigError(CDPError):
    """The config is wrong; the message names the file (or variable), the key and the fault."""


class PluginError(CDPError):
    """A plugin could not be loaded or registered something invalid; the message names it."""


class NotMigratedError(CDPError):
    """The database schema is not at the revision this code needs."""
