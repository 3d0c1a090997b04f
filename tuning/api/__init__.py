"""The HTTP API's plain core: response models, queries, removal and the OpenAPI document.

The functions in `functions/submit`, `functions/status` and `functions/delete` parse
requests and call these; nothing here knows about Flask.
"""
