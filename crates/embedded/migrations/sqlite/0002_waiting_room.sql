-- A sale's waiting room (issue 14), as the API writes it in JSON; NULL for a sale without one.
ALTER TABLE sales ADD COLUMN waiting_room TEXT;
