-- Day rollups are kept for TINYURL_CLICKS_DAY_RETENTION and deleted by age.
CREATE INDEX click_days_age ON click_days (day);
