-- Sales and orders of the PostgreSQL order store. Timestamps are unix milliseconds (BIGINT),
-- as in the embedded store, so both keep exactly the precision the service promises. Ids are
-- native UUIDs: 16 bytes in the index instead of 36.

CREATE TABLE sales (
    -- Creation order: `list_sales` answers oldest first.
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id UUID NOT NULL UNIQUE,
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL,
    stock INTEGER NOT NULL,
    starts_at_ms BIGINT NOT NULL,
    ends_at_ms BIGINT NOT NULL,
    per_buyer_limit INTEGER NOT NULL,
    payment_window_secs INTEGER NOT NULL,
    version INTEGER NOT NULL
);

-- The id is the reservation id, so a repeated insert of one reservation is a no-op.
-- No foreign key to sales: the order writers' hot insert should not pay for a lookup, and the
-- service creates a sale before anyone can reserve in it.
CREATE TABLE orders (
    id UUID PRIMARY KEY,
    sale_id UUID NOT NULL,
    buyer TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending_payment', 'paid', 'expired', 'cancelled')),
    reserved_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    payment_id TEXT,
    updated_at_ms BIGINT NOT NULL
);

-- The reaper's scan: only pending orders, by deadline. Partial, so paid and expired orders
-- (the bulk of a finished sale) cost the index nothing.
CREATE INDEX orders_pending_by_expiry ON orders (expires_at_ms) WHERE status = 'pending_payment';
-- Per-sale views: holdings, counts, recent orders newest first.
CREATE INDEX orders_by_sale ON orders (sale_id, reserved_at_ms);
