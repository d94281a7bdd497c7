from fraudops.cli.main import app

app(prog_name="fraudops")
