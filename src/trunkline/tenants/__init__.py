"""trunkline.tenants."""
