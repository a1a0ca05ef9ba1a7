"""Capsule over the Model Context Protocol: tools and resources (`server`) and the HTTP transports (`http`).

A peer of the CLI: every tool calls `capsule.api`, never `capsule.cli`.
"""
