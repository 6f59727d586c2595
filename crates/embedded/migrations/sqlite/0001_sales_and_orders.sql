-- Sales and orders of the embedded order store. Timestamps are unix milliseconds (INTEGER);
-- ids are the canonical hyphenated UUID text, readable from the sqlite3 shell.

CREATE TABLE sales (
    -- Creation order: `list_sales` answers oldest first. An explicit INTEGER PRIMARY KEY,
    -- because VACUUM may renumber an implicit rowid.
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    stock INTEGER NOT NULL,
    starts_at_ms INTEGER NOT NULL,
    ends_at_ms INTEGER NOT NULL,
    per_buyer_limit INTEGER NOT NULL,
    payment_window_secs INTEGER NOT NULL,
    version INTEGER NOT NULL
);

-- The id is the reservation id, so a repeated insert of one reservation is a no-op.
-- No foreign key to sales: the order writers' hot insert should not pay for a lookup, and the
-- service creates a sale before anyone can reserve in it.
CREATE TABLE orders (
    id TEXT PRIMARY KEY NOT NULL,
    sale_id TEXT NOT NULL,
    buyer TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending_payment', 'paid', 'expired', 'cancelled')),
    reserved_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    payment_id TEXT,
    updated_at_ms INTEGER NOT NULL
);

-- The reaper's scan: pending orders by deadline.
CREATE INDEX orders_by_status_expiry ON orders (status, expires_at_ms);
-- Per-sale views: holdings, counts, recent orders newest first.
CREATE INDEX orders_by_sale ON orders (sale_id, reserved_at_ms);
