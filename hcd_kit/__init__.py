"""hcd_kit."""
