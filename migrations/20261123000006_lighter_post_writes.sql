-- Writing a post touched more than it needed to; remote posts arrive by the
-- thousand a second.

-- `posts_author` (author, position) serves every lookup by author.
DROP INDEX posts_author_uri;

-- Read models are derived from the log and written only by their
-- projection, which keeps a post's edits with the post. The foreign key
-- cost a lookup and a row lock on `posts` for every edit written.
ALTER TABLE post_edits DROP CONSTRAINT post_edits_post_uri_fkey;
