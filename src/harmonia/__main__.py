from harmonia.cli.main import main

main()
