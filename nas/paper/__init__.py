"""The ShuffleNetV2 paper's experiments (guidelines G1-G4, Table 8's reference networks)."""
