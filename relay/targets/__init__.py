"""Outbound targets. A target is one module plus one entry in `build_target`'s registry."""
