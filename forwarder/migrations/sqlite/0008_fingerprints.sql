-- The durable near-duplicate index (normalizer/dedup.py decides, forwarder/fingerprints.py
-- stores). One fingerprint per new complaint; its LSH band keys and place/category block keys
-- (signed 64-bit integers) in lsh_bands, clustered by key then time, so a lookup is one index
-- range scan a key, bounded by the time window and a per-key cap.
CREATE TABLE fingerprints (
    seq          INTEGER PRIMARY KEY,        -- compact row number the band rows point at
    complaint_id TEXT NOT NULL UNIQUE,
    cluster_id   TEXT NOT NULL,              -- the id of the cluster's first complaint
    received_us  INTEGER NOT NULL,           -- epoch microseconds
    region       TEXT,
    agency       TEXT,
    fingerprint  BLOB NOT NULL               -- normalizer.similarity.Fingerprint.to_bytes()
);
CREATE TABLE lsh_bands (
    band_key    INTEGER NOT NULL,
    received_us INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (band_key, received_us, seq)
) WITHOUT ROWID;
