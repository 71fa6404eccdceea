"""The Airflow side: the nightly timetable (and its plugin), the landing sensor, the embedded Airflow environment."""
