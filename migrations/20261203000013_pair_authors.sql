-- A deleted remote actor takes along its favorites and reblogs and those of
-- its posts: `post_author` finds the latter without a scan of the table
-- (for the live projections and for rebuilds alike).
CREATE INDEX favorites_post_author ON favorites (post_author);
CREATE INDEX reblogs_post_author ON reblogs (post_author);
