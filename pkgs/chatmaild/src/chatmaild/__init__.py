"""chatmaild: the daemons that turn Postfix and Dovecot into a chatmail relay for Delta Chat."""
