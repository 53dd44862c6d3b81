-- Issue 11 (5): no-parking zones as geometry, and cameras placed in their zone by position
-- (pipeline/lookups/zone_shapes.py).

-- A zone's shape as GeoJSON (RFC 7946, [longitude, latitude]): an area (Polygon, MultiPolygon), or a road
-- segment (LineString, MultiLineString) with the width in metres of its no-parking strip. NULL: no shape
-- (cameras name such a zone themselves).
ALTER TABLE zones
    ADD COLUMN geometry jsonb CHECK (geometry->>'type' IN ('Polygon', 'MultiPolygon', 'LineString', 'MultiLineString')),
    ADD COLUMN width_m double precision CHECK (width_m > 0),
    ADD CONSTRAINT zones_width_for_roads
        CHECK ((width_m IS NOT NULL) = coalesce(geometry->>'type' IN ('LineString', 'MultiLineString'), false));

-- cameras.zone is the zone a camera's sightings take (as before); zone_given: the zone the operator named
-- (NULL: none, placed by position only); zone_by_position: whether a zone's shape placed it.
-- Cameras registered before this migration keep their zone as the operator's.
ALTER TABLE cameras
    ADD COLUMN zone_given text CHECK (zone_given ~ '^[a-z0-9_-]{1,32}$'),
    ADD COLUMN zone_by_position boolean NOT NULL DEFAULT false;
UPDATE cameras SET zone_given = zone;
