-- Day rollups are kept for TINYURL_CLICKS_DAY_RETENTION and deleted by age.
-- Rows arrive in day order, so a BRIN index finds the old ones in a few
-- pages for any table size, and costs the folds almost nothing to keep.
CREATE INDEX click_days_age ON click_days USING brin (day);
