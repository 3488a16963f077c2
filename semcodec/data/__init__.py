"""Data: training clip sources and procedural captioned clips."""
