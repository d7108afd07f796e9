"""Experiments: A/B tests of model variants in chat, with statistics that stay valid however often you look."""
