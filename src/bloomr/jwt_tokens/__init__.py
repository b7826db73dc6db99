"""Tokens minted by applications (SPEC §7): JWTs verified with a shared secret, a
public key file or a JWKS URL, turned into the same `Token` a stored token is, so every
transport and route takes them unchanged; and their revocations."""
