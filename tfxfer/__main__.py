from tfxfer.cli import main

main()
