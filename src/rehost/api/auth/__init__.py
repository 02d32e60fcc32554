"""Request authentication for the API: SigV4 verification (`rehost.api.auth.sigv4`)."""

from rehost.api.auth.sigv4 import AuthError, KeyInfo, SigV4Credential, VerifiedIdentity, verify_request

__all__ = ["AuthError", "KeyInfo", "SigV4Credential", "VerifiedIdentity", "verify_request"]
