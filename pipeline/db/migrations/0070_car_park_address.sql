-- Issue 19: a car park a driver can go to: its address and its phone (a business line, not personal
-- data), shown on the driver page beside the navigation link. Both optional.
ALTER TABLE car_parks ADD COLUMN IF NOT EXISTS address text, ADD COLUMN IF NOT EXISTS phone text;
