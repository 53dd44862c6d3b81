-- The console at a province's size (a million open cases): what the live page and /metrics read
-- every refresh reads an index over the rows it shows or counts, not the open cases themselves.
-- On a big table each is built while the table is locked for writes: apply when the workers are quiet.

-- The live page's open cases, soonest deadline first (queries.overview): the first 60 from the index,
-- not a sort of every open case.
CREATE INDEX cases_open_by_deadline ON cases (deadline_at, detected_at)
    WHERE state IN ('detected', 'warned', 'rechecking');

-- Due cases held per camera-events partition (watermarks.lag, read by the console and /metrics): a
-- range of this index per partition, without visiting each due case's row.
CREATE INDEX cases_due_by_partition ON cases (source_partition, wake_at)
    WHERE state IN ('warned', 'rechecking');

-- The drive-away rate looks for a departure seen before the deadline of each moved case: departures
-- only, a small index, instead of every capture of the case.
CREATE INDEX sightings_departed ON sightings (case_id, taken_at) WHERE kind = 'VehicleDeparted';
