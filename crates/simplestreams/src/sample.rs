//! Generation of MAAS-like sample streams for demos and tests.
