"""trunkline.tenants: per-business configuration (tenants/<id>/tenant.toml), validated and hot-reloaded.

model.py (frozen settings), loader.py (parse + precise errors), registry.py (lookup by DID, reload,
file watch), matcher.py (offline intent matcher), cli.py (`trunkline tenants check`).
"""
