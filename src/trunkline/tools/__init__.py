"""trunkline.tools: per-tenant tool catalogs (built-ins, HTTP webhooks, MCP servers) and their one gate.

catalog.py (ToolSpec, ToolCatalog.call), schema.py (argument validation), webhook.py (SSRF-guarded
HTTP), mcp_tools.py (MCP client), builtins.py (end_call / transfer_call), factory.py (build_catalog).
"""
