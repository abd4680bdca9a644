"""The dashboard's widgets: header and feed, the node x GPU grid, the jobs table."""
