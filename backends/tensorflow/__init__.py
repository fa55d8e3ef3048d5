"""Placeholder for the tensorflow engine (multirnn_tensorflow).

Not implemented yet: it registers no entry point, so multirnn never offers it. Its issue
builds the layers here, with the same module names as every other engine.
"""
