"""The embedded demo dataset: a realistic raw store built from photographs that ship in packages."""
