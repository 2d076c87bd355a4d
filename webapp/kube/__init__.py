"""Talking to Kubernetes, cut along client-go's seams.

``client`` owns the connection, the labels we select by, and the one way a
client error becomes ours; ``reflector`` lists, watches and relists a kind of
object and reports what it sees. What the objects mean (a Job's status) lives
elsewhere (``webapp.k8s_status``), and so does what is done with it
(``webapp.executors.k8s_watch``).
"""
