"""Trace context carried from what triggered an invocation to its target, in the forms each side
speaks (``context``: X-Ray's header and W3C Trace Context)."""
