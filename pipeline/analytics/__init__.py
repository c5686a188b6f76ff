"""Per-stream analytics on tracked detections: tracking, line crossings, zones and event lifecycles."""
