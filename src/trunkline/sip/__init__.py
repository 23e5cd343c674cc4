"""trunkline.sip."""
