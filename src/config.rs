//! PLACEHOLDER — being written by the config/CLI engineer.
