"""trunkline.tools."""
